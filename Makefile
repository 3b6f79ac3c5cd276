# The two commands a new user needs:
#   make demo   - the main job on the MuJoCo twin (records expert demonstrations, prints the summary)
#   make test   - the test suite
#   make isaac  - (optional) the Isaac Lab twin's venv and assets; make test-isaac runs its tests
#   make lerobot - (optional) the real lerobot package's venv; make test-lerobot runs the LeRobot interop tests
# Both create .venv on first use and install what they need (torch==2.13.0 first, then the
# package with its extras; Debian's EGL/Mesa packages for offscreen rendering when missing).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.robot_rl-installed
RUN := scripts/isolated.sh
export MUJOCO_GL ?= egl

.PHONY: demo test test-slow test-isaac isaac bench bench-list install clean

$(STAMP): pyproject.toml scripts/bootstrap.sh
	bash scripts/bootstrap.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(RUN) $(PY) -m robot_rl.demo $(ARGS)

test: $(STAMP)
	$(RUN) $(PY) -m pytest -q $(ARGS)

# the long end-to-end tests (marked `slow`): CI runs them after `make test`
test-slow: $(STAMP)
	$(RUN) $(PY) -m pytest -q -m "slow" $(ARGS)

# the Isaac Lab twin (docs/isaac.md): its own Python 3.12 venv, cached in ~/.cache/robot_rl and
# linked as .venv-isaac, plus the local USD assets; `make test-isaac` runs its tests on CPU
isaac:
	bash scripts/isaac_venv.sh

# robot_rl's own code runs in both venvs (mujoco 3.12 / torch 2.11 / zarr 3.4 there): these core
# test files (nothing of ROS 2, which stays in the core venv) run in the Isaac venv too
ISAAC_CORE_TESTS := tests/test_twin.py tests/test_env.py tests/test_experts.py tests/test_spec.py tests/test_store.py \
                    tests/test_store_codecs.py tests/test_sampler.py tests/test_randomization.py tests/test_diffusion.py \
                    tests/test_act.py tests/test_policy_checkpoint.py tests/test_evaluate.py tests/test_train.py
test-isaac: isaac
	$(RUN) .venv-isaac/bin/python -m pytest -q -m isaac --confcutdir=tests/isaac -p no:cacheprovider tests/isaac $(ARGS)
	$(RUN) .venv-isaac/bin/python -m pytest -q -p no:cacheprovider -k "not sim_robot" $(ISAAC_CORE_TESTS)

# the real LeRobot (lerobot 0.4.4) in a venv of its own, cached in ~/.cache/robot_rl and linked as
# .venv-lerobot; `make test-lerobot` proves our LeRobotDataset v3.0 export / import against it
# (tests/lerobot: the core venv's pytest drives lerobot through scripts run by that venv)
.PHONY: lerobot test-lerobot
lerobot:
	bash scripts/lerobot_venv.sh

test-lerobot: $(STAMP) lerobot
	$(RUN) $(PY) -m pytest -q -m lerobot -p no:cacheprovider tests/lerobot $(ARGS)

# every benchmark script, in the order docs/benchmarks.md lists them (`make bench-list` prints them)
BENCHES := bench_twin.py bench_experts.py bench_store.py bench_joint_states.py bench_ros_record.py bench_cameras.py bench_servo.py bench_calibration.py \
           bench_hardware.py bench_bags.py bench_lerobot.py \
           bench_policies.py bench_ddp.py bench_image_policies.py bench_image_levers.py bench_data_loading.py bench_inference.py bench_onnx.py bench_rl.py bench_rl_transport.py \
           bench_reward_classifier.py bench_randomization.py bench_sysid.py bench_camera_calibration.py bench_robustness.py \
           bench_sim2real.py bench_isaac.py bench_demo.py
# bench_isaac.py runs in the Isaac venv (make isaac builds it)
bench: $(STAMP)
	cd benchmarks && for b in $(BENCHES); do \
	  py=../$(PY); if [ $$b = bench_isaac.py ]; then $(MAKE) -C .. isaac && py=../.venv-isaac/bin/python; fi; \
	  ../$(RUN) $$py $$b || exit 1; done

bench-list:
	@printf '%s\n' $(BENCHES)

clean:
	rm -rf out .pytest_cache
