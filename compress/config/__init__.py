"""The job config: the typed, frozen schema (schema.py, search.py), and loading it from YAML (load.py).

Light on purpose (PyYAML only): the data loaders and the HTTP service import it.
"""

from .errors import ConfigError, invalid
from .load import build, from_mapping, load_config, load_run_config, to_dict
from .schema import (
    AgoraConfig, AugmentConfig, DataConfig, DistillConfig, JobConfig, NegativesConfig, SourceConfig, SplitConfig,
    TaskConfig, TeacherConfig,
    ThetaConfig, TrainConfig, VocabPruneConfig,
)
from .search import (
    CalibrationConfig, ConfirmConfig, EarlyStopConfig, FidelityConfig, FptasConfig, LatencyConfig, ReportConfig, SearchConfig,
)

__all__ = [
    "AgoraConfig", "AugmentConfig", "CalibrationConfig", "ConfigError", "ConfirmConfig", "DataConfig", "DistillConfig",
    "EarlyStopConfig", "FidelityConfig", "FptasConfig", "JobConfig", "LatencyConfig", "NegativesConfig", "ReportConfig", "SearchConfig", "SourceConfig", "SplitConfig", "TaskConfig", "TeacherConfig",
    "ThetaConfig", "TrainConfig", "VocabPruneConfig", "build", "from_mapping", "invalid", "load_config", "load_run_config", "to_dict",
]
