"""What 21 CFR Part 11 and EU GMP Annex 11 ask of the records: the hash-chained audit trail (and its
spool), electronic signatures and the therapy record."""
