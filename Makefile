# README command 1: `make demo`   README command 2: `make test`
# Both create or complete .venv/ first (tools/setup_env.sh; seconds when it is complete).
PY := .venv/bin/python
DEMO := work_dirs/demo
DEMO_ARGS := --img-dir $(DEMO)/images --targets all --num-images 8 --input-size 384 \
	--batch-size 2 --num-workers 0 --overwrite
VMAMBA_T := configs/vmamba/vssm1/upernet_vssm_4xb4-160k_ade20k-512x512_tiny.py
SWIN_T := configs/demo/swin-t_upernet_demo.py
POINT_ARGS := --img-dir $(DEMO)/images --num-images 4 --input-size 224 --batch-size 4 \
	--num-workers 0 --targets backbone.3 --overwrite

.PHONY: env demo demo-train test

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
	$(PY) tools/erf_seg.py $(SWIN_T) $(POINT_ARGS) --points grid 3 --out-dir $(DEMO)/swin-t_grid
	$(PY) tools/erf_seg.py $(VMAMBA_T) $(POINT_ARGS) --points grid 3 --out-dir $(DEMO)/vmamba-t_grid
	$(PY) tools/demo_pseudo_labels.py $(DEMO)/images $(DEMO)/labels --first-value 1
	$(PY) tools/erf_seg.py $(SWIN_T) $(POINT_ARGS) --label-dir $(DEMO)/labels --points per-class \
		--points-cap 2 --class-names $$(cat $(DEMO)/labels/classes.txt) --out-dir $(DEMO)/swin-t_classes

# a short CPU training run with ERFHook on (centre and per-class ERFs, before vs after)
demo-train: env
	$(PY) tools/demo_train.py $(DEMO)/train --iters 200 --val-interval 100
	$(PY) tools/erf_compare.py --evolution $(DEMO)/train/erf --targets decode_head \
		--out $(DEMO)/train_evolution.png
	$(PY) tools/erf_compare.py $(DEMO)/train/erf_classes/iter_0 $(DEMO)/train/erf_classes/iter_200 \
		--labels before after --out $(DEMO)/train_per_class.png

test: env
	$(PY) -m pytest tests -q -rs -p no:cacheprovider
