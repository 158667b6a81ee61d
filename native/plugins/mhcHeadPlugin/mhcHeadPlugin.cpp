// MhcHead: residual [T,n,d] -> y [T,d] (contract: shared/spec/mhc_ops.md).
// Its table and kernel call; the plugin class and creator are
// common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(mhcHeadParams const& p, KernelCall const& c)
{
    return mhcHead(c.inputs[0], c.f32In(1), c.f32In(2), c.f32In(3), c.outputs[0], c.t, c.n, c.d, c.dtype, &p,
        c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcHeadCreator() noexcept
{
    static MhcCreator<mhcHeadParams> creator({"MhcHead", "mhcHead", headFields(),
        {{"residual", "Tnd", kRESIDUAL_DTYPE}, {"hc_fn", "nK"}, {"hc_scale", "1"}, {"hc_base", "n"}},
        {{"y", "Td", kSAME_DTYPE}}, mhcHeadWorkspaceSize},
        headParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
