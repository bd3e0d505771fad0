"""The reconcile of one ComputeDomain: read the caches, plan and render (`controller.plan`,
`controller.render`), write the children, labels and cliques, prune, and write the status once."""
