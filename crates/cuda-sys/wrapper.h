/* Input to `cargo xtask bindgen`: the CUDA 13.0 driver API. */
#include <cuda.h>
