"""Evaluation metrics: FID/KID on Inception features (one documented protocol, cached reference
statistics), PSNR/SSIM for reconstructions. Codebook usage of VQ models lives with the autoencoder."""

from latentdiff.metrics.fid import FeatureStats, fid_from_features, fid_from_stats, frechet_distance
from latentdiff.metrics.fid_kid import compute_fid, fid_kid_from_features
from latentdiff.metrics.image_quality import psnr, reconstruction_metrics, ssim
from latentdiff.metrics.inception import (
    PROTOCOL_ID,
    InceptionFeatures,
    InceptionWeightsError,
    find_inception_weights,
    preprocess,
    quantize_uint8,
)
from latentdiff.metrics.kid import kid_from_features, mmd2_unbiased
from latentdiff.metrics.reference_cache import reference_features, reference_key, reference_stats

__all__ = [
    "PROTOCOL_ID",
    "FeatureStats",
    "InceptionFeatures",
    "InceptionWeightsError",
    "compute_fid",
    "fid_from_features",
    "fid_from_stats",
    "fid_kid_from_features",
    "find_inception_weights",
    "frechet_distance",
    "kid_from_features",
    "mmd2_unbiased",
    "preprocess",
    "psnr",
    "quantize_uint8",
    "reconstruction_metrics",
    "reference_features",
    "reference_key",
    "reference_stats",
    "ssim",
]
