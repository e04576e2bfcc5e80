"""Small-scale reproductions of the seed papers' headline claims
(run by ``experiments/reproduce.py``)."""
