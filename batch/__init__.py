"""inferline batch: distributed batch inference on Dask with the serving path's features and model, exactly once."""

from batch.job import BatchJobFailed, JobConfig, JobReport, OutputInUse, run_job
from batch.partition import PartitionRejected, output_columns, prediction_frame, score_frame
from batch.plan import EmptyInput, Partition, Plan, plan_job
from batch.release import ModelRelease, resolve_release

__all__ = [
    "BatchJobFailed",
    "EmptyInput",
    "JobConfig",
    "JobReport",
    "ModelRelease",
    "OutputInUse",
    "Partition",
    "PartitionRejected",
    "Plan",
    "output_columns",
    "plan_job",
    "prediction_frame",
    "resolve_release",
    "run_job",
    "score_frame",
]
