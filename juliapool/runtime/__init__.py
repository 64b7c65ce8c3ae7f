"""Tools that put a Julia runtime and the worker's system image on a machine: `install`
(juliapool-install-julia) and `sysimage` (juliapool sysimage). The library core never imports this
package; it only looks for what these tools made (juliapool.paths)."""
