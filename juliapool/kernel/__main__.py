"""Start the juliapool Jupyter kernel (see juliapool.kernel.launch)."""
from juliapool.kernel import launch
launch()
