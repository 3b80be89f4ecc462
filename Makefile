# Two commands do all the set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test lint clean reference reference-status reference-check readme-table readme-figure

# pip here is capped at torch 2.14.1 / torchvision 0.29.1, which lie on local disk.
$(VENV)/.installed: pyproject.toml plugins/feedback_alignment/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e plugins/feedback_alignment
	touch $@

install: $(VENV)/.installed

# The demo: every method on the normalised teacher task (about 40 s on 2 cores), its table, and
# one HTML page of tables and figures (its path is printed last).
demo: install
	$(BIN)/bench run suites/smoke.yaml
	$(BIN)/bench report results/smoke

# mypy checks what pyproject.toml's [tool.mypy] names: the whole package, plugins/ and benchmarks/.
lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

# pytest exits 5 when it collects no test: make fails on it like on any other failure.
test: lint
	$(BIN)/python -m pytest -q

# The reference campaign (benchmarks/reference.py): the paper's tables at the full protocol, then
# the three families' tuning studies and cells, into results/reference/ (hours; resumable; not
# part of CI): the first list that is not complete, and those after it. DATA: the datasets' root folder, by
# default $$BIOPLAUS_DATA, else ../shared/data if present, else ./data. `reference-status` needs
# it too: whether a checkpoint resumes depends on the data it names.
DATA ?= $(or $(BIOPLAUS_DATA),$(if $(wildcard ../shared/data),../shared/data,data))
reference: install
	$(BIN)/python benchmarks/reference.py run --data-dir $(DATA)

reference-status: install
	$(BIN)/python benchmarks/reference.py status --data-dir $(DATA)

# Re-runs the first epoch of one seed of every reference cell on the real data and compares it
# with its record (minutes; not part of CI).
reference-check: install
	$(BIN)/python benchmarks/reference_check.py --data-dir $(DATA)

# The README's reference table, rewritten from the records in results/reference/table1 (a test
# checks that it is current).
readme-table: install
	$(BIN)/python benchmarks/readme_table.py

# The README's figure of the reference: Table 1's MNIST column, test error per epoch, drawn from
# the committed records (a test runs this command on a generated results folder).
readme-figure: install
	$(BIN)/bench plot results/reference/table1 --figure curves --dataset mnist --out docs/reference-mnist-curves.png

clean:
	rm -rf $(VENV) results/smoke *.egg-info
