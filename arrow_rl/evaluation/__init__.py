"""Policy evaluation: the control loop (``runner``), serving-rate search and multi-policy comparison."""
