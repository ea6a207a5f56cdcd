"""Networks: the multi-task generator and the output-space discriminators."""

from semimtl_geo.models.discriminator import Discriminator
from semimtl_geo.models.encoder import build_encoder
from semimtl_geo.models.multitask import TASKS, MultiTaskNet, normalise_tasks

__all__ = ["TASKS", "Discriminator", "MultiTaskNet", "build_encoder", "normalise_tasks"]
