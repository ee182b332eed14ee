// Builds the etcd server used by the test bed from its published module. The
// server module's replace lines point into etcd's own tree and are ignored when
// it is a dependency, so the pinned sibling modules come from the proxy.
module gantry.local/e2e-tools/etcd

go 1.25.0

require go.etcd.io/etcd/server/v3 v3.6.14
