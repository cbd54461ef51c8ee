import pytest
import torch


@pytest.fixture(autouse=True)
def _one_intra_op_thread():
    # these models are tiny: a second OpenMP thread buys nothing, and on the shared 2-core machine a
    # busy neighbour makes its barrier waits cost 10-100x the convolution itself
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
