"""byzsim: a pure-NumPy vectorized simulator of Byzantine-robust federated learning.

Flat public API; see README.md for the contracts and shapes.  The component
contracts are :mod:`byzsim.protocols`; a user's aggregator or attack is checked with
:mod:`byzsim.testing`.
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
from .pipeline import Pipeline
from .preaggregators import PREAGGREGATORS, get_preaggregator
from .protocols import Aggregator, Attack, Estimator, Model, PreAggregator
from .registry import Registry, UnknownNameError
from .simulate import RunResult, build_problem, run

__version__ = "0.1.0"

__all__ = [
    "AGGREGATORS",
    "ATTACKS",
    "Aggregator",
    "Attack",
    "ClientData",
    "Config",
    "DATASETS",
    "DataError",
    "Dataset",
    "Estimator",
    "GradientMethod",
    "METHODS",
    "MLP",
    "MODELS",
    "Model",
    "PARTITIONS",
    "PREAGGREGATORS",
    "PenaltyMethod",
    "Pipeline",
    "PreAggregator",
    "Problem",
    "Registry",
    "RunResult",
    "SGDEstimator",
    "SagaEstimator",
    "SoftmaxRegression",
    "State",
    "UnknownNameError",
    "apply_attack",
    "build_problem",
    "class_counts",
    "draw_byzantine",
    "geometric_median",
    "get_aggregator",
    "get_attack",
    "get_preaggregator",
    "load_dataset",
    "lp_subgradient",
    "make_config",
    "make_model",
    "partition",
    "partition_clients",
    "run",
    "sample_batch",
]
