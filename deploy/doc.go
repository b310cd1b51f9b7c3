// Package deploy holds the files that run a powercut exploration on real batch engines: a
// Kubernetes Indexed Job and its merge Job (kubernetes/), a Slurm job array and its dependent
// merge job (slurm/). It has no code; its tests check the manifests against the Kubernetes API
// types, run their scripts, and run the Slurm array on a real single-node Slurm.
package deploy
