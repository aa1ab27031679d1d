"""The job core shared by the api (``app``) and the workers (``worker``): settings, the
database and its tables, the job store (claim, heartbeat, progress, outcome), the queue
contract (task names, queues, Celery config) and dataset references. No HTTP, no torch:
``app`` and ``worker`` both import this package and neither imports the other."""
