"""Where state lives: the database session, the models, and the unit of work that commits a use case's
writes together (with the hooks that run after the commit)."""
