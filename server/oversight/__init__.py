"""The control tower's signals: alerts raised for people (late work, excursions, identity mismatches,
incidents) and the escalations that raise them."""
