"""Where issued certificates and one-time challenges are kept (see `base.Store`)."""
