# README command 1: `make demo`   README command 2: `make test`
# Both create or complete .venv/ first (tools/setup_env.sh; seconds when it is complete).
PY := .venv/bin/python
DEMO := work_dirs/demo

.PHONY: env demo test

env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/demo_images.py $(DEMO)/images
	$(PY) tools/erf_seg.py configs/demo/swin-t_upernet_demo.py --img-dir $(DEMO)/images \
		--targets all --num-images 8 --input-size 384 --batch-size 2 --out-dir $(DEMO)/erf

test: env
	$(PY) -m pytest tests -q -p no:cacheprovider
