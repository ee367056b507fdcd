"""Tasks: one module per data source, each returning a TaskData."""

from tfbert.tasks.task_data import InvalidTaskData, TaskData

__all__ = ["InvalidTaskData", "TaskData"]
