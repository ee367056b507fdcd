"""Tasks: one module per data source, each returning a TaskData; TaskSpec, a trained task
read back without its data."""

from tfbert.tasks.task_data import InvalidTaskData, TaskData, TaskSpec

__all__ = ["InvalidTaskData", "TaskData", "TaskSpec"]
