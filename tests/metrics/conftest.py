import pytest

from latentdiff.metrics.inception import InceptionFeatures


@pytest.fixture(scope="session")
def inception() -> InceptionFeatures:
    """One extractor for the whole session: loading and hashing the 87 MB weights takes a second."""
    return InceptionFeatures(batch_size=4)
