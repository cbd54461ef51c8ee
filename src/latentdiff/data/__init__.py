"""Image folders, built-in datasets and the latent cache (see docs/architecture.md, "Data")."""

from latentdiff.data.builtin import BUILTIN, builtin_names, list_datasets, load_builtin
from latentdiff.data.dataset import ArrayImageDataset, ImageDataset, class_index
from latentdiff.data.image_convert import IMAGE_EXTENSIONS
from latentdiff.data.image_folder import HOLDOUT_FRACTION, ImageFolder, is_held_out
from latentdiff.data.latent_cache import LatentCache, encode_dataset
from latentdiff.data.load import load_dataset
from latentdiff.data.png_export import export_dataset
from latentdiff.data.source import DatasetNotInstalled, data_root

__all__ = [
    "BUILTIN",
    "HOLDOUT_FRACTION",
    "IMAGE_EXTENSIONS",
    "ArrayImageDataset",
    "DatasetNotInstalled",
    "ImageDataset",
    "ImageFolder",
    "LatentCache",
    "builtin_names",
    "class_index",
    "data_root",
    "encode_dataset",
    "export_dataset",
    "is_held_out",
    "list_datasets",
    "load_builtin",
    "load_dataset",
]
