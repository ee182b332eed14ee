// Builds metrics-server (the resource metrics API behind `kubectl top`) from its
// published module, for the test bed's metrics-server image.
module gantry.local/e2e-tools/metrics-server

go 1.26.4

require sigs.k8s.io/metrics-server v0.9.0
