# Convenience targets; each is the same as `python3 tasks.py <target>` (creates .venv on first use).
.PHONY: run test bench
run:
	python3 tasks.py run
test:
	python3 tasks.py test
bench:
	python3 tasks.py bench
