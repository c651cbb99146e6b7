# Full-kernel test lane (hack/kernel-lane/README.md). Include from the root
# Makefile:  include hack/kernel-lane/kernel-lane.mk
#
#   make test-kernel                 all tests of ./pkg/... ./plugins/... (+ the
#                                    lane self-test) in one VM, KNIT_KERNEL_LANE=1
#   make test-kernel KERNEL_LANE_RUN='Vlan|Bond'   only matching tests
#   make test-kernel-selftest        the lane checking itself (pass + must-fail)
#
# Knobs (env or make variables): KERNEL_LANE_PKGS, KERNEL_LANE_RUN,
# KERNEL_LANE_SKIP, KERNEL_LANE_TEST_TIMEOUT, KERNEL_LANE_TIMEOUT,
# KERNEL_LANE_MEM, KERNEL_LANE_TESTFLAGS, KERNEL_LANE_FLAGS, KERNEL_LANE_REF;
# see hack/kernel-lane/test-all.sh.

KERNEL_LANE_DIR := $(patsubst %/,%,$(dir $(lastword $(MAKEFILE_LIST))))

export KERNEL_LANE_PKGS KERNEL_LANE_RUN KERNEL_LANE_SKIP KERNEL_LANE_TEST_TIMEOUT \
	KERNEL_LANE_TIMEOUT KERNEL_LANE_MEM KERNEL_LANE_TESTFLAGS KERNEL_LANE_FLAGS KERNEL_LANE_REF

.PHONY: test-kernel test-kernel-selftest

test-kernel:
	$(KERNEL_LANE_DIR)/test-all.sh

test-kernel-selftest:
	$(KERNEL_LANE_DIR)/selftest.sh
