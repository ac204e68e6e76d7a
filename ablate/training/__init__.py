"""One run's training: the loop, seeds packed into one model, the tasks a run learns."""
