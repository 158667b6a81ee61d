"""TensorRT side of the pipeline: finding TensorRT, building engines, running them."""
