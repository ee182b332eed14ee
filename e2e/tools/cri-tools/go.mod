// Builds crictl and critest (a Go test binary) from the published cri-tools module.
module gantry.local/e2e-tools/cri-tools

go 1.26.2

require sigs.k8s.io/cri-tools v1.36.0
