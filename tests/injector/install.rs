//! The Helm chart and the plain manifests (filled in with the chart).
