"""byzsim: a pure-NumPy vectorized simulator of Byzantine-robust federated learning.

Flat public API; see README.md and DESIGN notes for the contracts and shapes.
"""

from .aggregators import AGGREGATORS, geometric_median, get_aggregator
from .algorithms import (
    GradientMethod,
    PenaltyMethod,
    Problem,
    SagaEstimator,
    SGDEstimator,
    State,
    lp_subgradient,
    sample_batch,
)
from .attacks import ATTACKS, apply_attack, get_attack
from .config import METHODS, Config, make_config
from .data import DATASETS, Dataset, DataError, load_dataset
from .models import MLP, MODELS, SoftmaxRegression, make_model
from .partition import PARTITIONS, ClientData, class_counts, draw_byzantine, partition, partition_clients
from .registry import Registry, UnknownNameError
from .simulate import RunResult, build_problem, run

__version__ = "0.1.0"

__all__ = [name for name in dir() if not name.startswith("_")]
