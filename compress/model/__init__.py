"""The models: the teacher, the students built from its weights, running them, and the task metrics.

teacher (resolve, check and load a teacher; its cached outputs and importance) · student (a StudentSpec -> a
smaller BERT from the teacher's weights; parameter counts) · inference (predictions and scores, PyTorch or ONNX
Runtime, by the same code) · metrics (task metrics; SQuAD 2.0 exactly as the official script).
"""

from .inference import evaluate_model, evaluate_onnx, output_names, predict_logits, predict_onnx, score_outputs
from .metrics import (
    SquadGold, classification_metrics, compute_exact, compute_f1, points, regression_metrics, squad_evaluate,
)
from .student import (
    Importance, StudentSpec, build_student, configured_spec_fields, measure_importance, model_param_count,
    param_count, teacher_layers,
)
from .teacher import TeacherError, check_tokenizer, load_teacher, load_tokenizer, resolve_model

__all__ = [
    "Importance", "SquadGold", "StudentSpec", "TeacherError", "build_student", "check_tokenizer",
    "classification_metrics", "compute_exact", "compute_f1", "configured_spec_fields", "evaluate_model",
    "evaluate_onnx", "load_teacher", "load_tokenizer", "measure_importance", "model_param_count", "output_names",
    "param_count", "points", "predict_logits", "predict_onnx", "regression_metrics", "resolve_model",
    "score_outputs", "squad_evaluate", "teacher_layers",
]
