"""inferline batch: distributed batch inference on Dask with the serving path's features and model, exactly once."""

from inferline.batch.job import BatchJobFailed, JobConfig, JobReport, OutputInUse, run_job
from inferline.batch.partition import PartitionRejected, output_columns, prediction_frame, score_frame
from inferline.batch.plan import EmptyInput, Partition, Plan, plan_job
from inferline.release.resolve import Release, resolve_release

__all__ = [
    "BatchJobFailed",
    "EmptyInput",
    "JobConfig",
    "JobReport",
    "OutputInUse",
    "Partition",
    "PartitionRejected",
    "Plan",
    "Release",
    "output_columns",
    "plan_job",
    "prediction_frame",
    "resolve_release",
    "run_job",
    "score_frame",
]
