//! Custom resources of the `ringmaster.dev/v1alpha1` API group.
