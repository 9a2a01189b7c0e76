"""Scripts for developers: the README screenshots and the tiny random-weight test model."""
