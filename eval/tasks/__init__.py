"""One module per task kind; each turns a suite task into a TaskResult (see base.py)."""
