"""Who may do what: accounts, passwords and tokens, the current user, role and site checks, web sessions."""
