# README command 1: `make demo`   README command 2: `make test`
# Both create or complete .venv/ first (tools/setup_env.sh; seconds when it is complete).
PY := .venv/bin/python
DEMO := work_dirs/demo
DEMO_ARGS := --img-dir $(DEMO)/images --targets all --num-images 8 --input-size 384 \
	--batch-size 2 --num-workers 0 --overwrite
VMAMBA_T := configs/vmamba/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py

.PHONY: env demo test

env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/demo_images.py $(DEMO)/images
	$(PY) tools/erf_seg.py configs/demo/swin-t_upernet_demo.py $(DEMO_ARGS) --out-dir $(DEMO)/swin-t
	$(PY) tools/erf_seg.py $(VMAMBA_T) $(DEMO_ARGS) --out-dir $(DEMO)/vmamba-t
	$(PY) tools/erf_compare.py $(DEMO)/swin-t $(DEMO)/vmamba-t --labels Swin-T VMamba-T \
		--out $(DEMO)/compare.png
	$(PY) tools/erf_compare.py $(DEMO)/swin-t $(DEMO)/vmamba-t --labels Swin-T VMamba-T \
		--targets backbone.3 decode_head --overlay $(DEMO)/images/demo_00.jpg --contours both \
		--out $(DEMO)/overlay.png

test: env
	$(PY) -m pytest tests -q -rs -p no:cacheprovider
