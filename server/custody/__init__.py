"""Chain of identity and custody: issuing COIs, scanning them, custody transfers, condition readings and
their excursions, and labels."""
