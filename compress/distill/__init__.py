"""Training students (and fine-tuning teachers).

loop (the training loop, top to bottom) · losses (the loss terms, pure functions) · jobs (fine-tune a teacher,
distill one student, the shared context; each writes a folder a person can read) · agora (Agora fine-tuning) ·
devices (the device and precision, through Hugging Face Accelerate).
"""

from .agora import AgoraResult, run_agora
from .jobs import Context, distill_student, finetune_teacher, load_context, save_run, teacher_path
from .loop import StopTraining, TrainingDiverged, TrainResult, train

__all__ = ["AgoraResult", "Context", "StopTraining", "TrainResult", "TrainingDiverged", "distill_student",
           "finetune_teacher", "load_context", "run_agora", "save_run", "teacher_path", "train"]
