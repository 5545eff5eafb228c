"""The worker side of minicloud: the code that runs inside each worker process."""
