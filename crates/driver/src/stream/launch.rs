//! Kernel launches on a [`DeviceStream`].

use super::DeviceStream;
use crate::error::Result;
use crate::module::{Function, LaunchArgs, LaunchConfig};
use crate::resource::{Access, UnderCapture};
use crate::runtime::raw;

impl DeviceStream {
    /// Launches `f` with `config` and `args`.
    ///
    /// Buffers and flags passed as arguments ([`LaunchArgs::arg`]) go through the crate's use
    /// path: their device is checked, and they (and `f`'s module) stay alive until the GPU is past
    /// the launch whatever the caller drops; under capture the graph owns them.
    ///
    /// # Safety
    ///
    /// `args` must match the kernel's parameter list in number and types, and the kernel must
    /// only access memory its arguments make valid (in bounds of the buffers passed, for the
    /// launch's grid). Memory passed as a plain address (an integer) is the caller's to keep alive.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) for zero dimensions or a cluster
    /// that does not divide the grid, [`Error::DeviceMismatch`](crate::Error::DeviceMismatch) for a
    /// function or buffer of another device, [`Error::Driver`](crate::Error::Driver) otherwise.
    pub unsafe fn launch(
        &self,
        f: &Function,
        config: LaunchConfig,
        args: &mut LaunchArgs<'_>,
    ) -> Result<()> {
        // SAFETY: forwarded from the caller.
        unsafe { self.launch_op("DeviceStream::launch", f, config, args) }
    }

    /// [`launch`](Self::launch) as the public operation `op` (for the crate's own gates).
    ///
    /// # Safety
    ///
    /// As [`launch`](Self::launch).
    pub(crate) unsafe fn launch_op(
        &self,
        op: &'static str,
        f: &Function,
        config: LaunchConfig,
        args: &mut LaunchArgs<'_>,
    ) -> Result<()> {
        let mut op = self.inner.begin(op, UnderCapture::Record)?;
        config.validate()?;
        op.keep_alive(f)?;
        let params = args.resolve(|r| op.address(r, Access::Write))?;
        self.inner.bind()?;
        let func = f.raw;
        op.enqueue(|stream| match config.cluster {
            // SAFETY: the caller guarantees the parameters; handles are live and of one context;
            // every resource argument stays allocated until the GPU is past the launch.
            None => unsafe {
                raw::launch_kernel(
                    func,
                    config.grid,
                    config.block,
                    config.shared_mem_bytes,
                    stream,
                    params,
                )
            },
            Some(c) => {
                let mut attr = ferrocuda_sys::CUlaunchAttribute {
                    id: ferrocuda_sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION,
                    ..Default::default()
                };
                attr.value.clusterDim.x = c.0;
                attr.value.clusterDim.y = c.1;
                attr.value.clusterDim.z = c.2;
                let cfg = ferrocuda_sys::CUlaunchConfig {
                    gridDimX: config.grid.0,
                    gridDimY: config.grid.1,
                    gridDimZ: config.grid.2,
                    blockDimX: config.block.0,
                    blockDimY: config.block.1,
                    blockDimZ: config.block.2,
                    sharedMemBytes: config.shared_mem_bytes,
                    hStream: stream,
                    attrs: &mut attr,
                    numAttrs: 1,
                };
                // SAFETY: as above; `attr` outlives the call.
                unsafe { raw::launch_kernel_ex(&cfg, func, params) }
            }
        })
    }
}
