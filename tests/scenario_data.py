"""The journeys and form data the scenario tests drive through the bundled diagrams (shared with the demo)."""

from server.demo_data import ALLOGENEIC_HAPPY_PATH, AUTOLOGOUS_HAPPY_PATH, COI, FORM_DATA, form_data

__all__ = ["ALLOGENEIC_HAPPY_PATH", "AUTOLOGOUS_HAPPY_PATH", "COI", "FORM_DATA", "form_data"]
