"""Therapies as process instances: deployed definitions, the engine's runs and what each step leaves
behind, timers and their scheduler, incidents, escalations and alerts, and the service-task operators."""
