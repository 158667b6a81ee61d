// MhcPostHead: the last boundary, MhcPost then MhcHead on the new residual
// (contract: shared/spec/mhc_ops.md). Its table and kernel call; the plugin
// class and creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(mhcHeadParams const& p, KernelCall const& c)
{
    return mhcPostHead(c.inputs[0], c.inputs[1], c.f32In(2), c.f32In(3), c.f32In(4), c.f32In(5), c.f32In(6),
        c.outputs[0], c.t, c.n, c.d, c.dtype, &p, c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostHeadCreator() noexcept
{
    // y takes x's dims expressions (input 0), as x [T, d] already has y's shape.
    static MhcCreator<mhcHeadParams> creator({"MhcPostHead", "mhcPostHead", headFields(),
        {{"x", "Td", kRESIDUAL_DTYPE}, {"residual", "Tnd", kSAME_DTYPE}, {"post_mix", "Tn"}, {"comb_mix", "Tnn"},
            {"hc_fn", "nK"}, {"hc_scale", "1"}, {"hc_base", "n"}},
        {{"y", "Td", kSAME_DTYPE}}, mhcPostHeadWorkspaceSize},
        headParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
