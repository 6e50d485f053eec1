"""The schema history before the baseline (0001..0017): only ledgers made before the squash
run it, to reach 0017. Frozen: never edit these revisions or add to them."""
