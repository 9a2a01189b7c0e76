"""Safety: the guard model, the policy per category, a test box and the audit log."""
