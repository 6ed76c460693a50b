"""Challenge providers: enrollment steps that decide whether a request is authorised."""
