"""Tether's workflow engine: pure Python around SpiffWorkflow, with no Flask and no database.

The server hands it a definition (BPMN and forms) or a serialized instance state plus one command;
it returns the new state, the domain events that happened and what the instance now waits for.
"""
