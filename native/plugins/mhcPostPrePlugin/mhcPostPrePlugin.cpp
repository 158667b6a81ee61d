// MhcPostPre: a layer boundary, MhcPost then the next MhcPre on the new residual
// (contract: shared/spec/mhc_ops.md). Its table and kernel call; the plugin
// class and creator are common/mhcOpPlugin.h's.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(mhcPreParams const& p, KernelCall const& c)
{
    return mhcPostPre(c.inputs[0], c.inputs[1], c.f32In(2), c.f32In(3), c.f32In(4), c.f32In(5), c.f32In(6),
        c.outputs[0], c.outputs[1], c.f32Out(2), c.f32Out(3), c.t, c.n, c.d, c.dtype, &p, c.workspace,
        c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostPreCreator() noexcept
{
    static MhcCreator<mhcPreParams> creator({"MhcPostPre", "mhcPostPre", preFields(),
        {{"x", "Td", kRESIDUAL_DTYPE}, {"residual", "Tnd", kSAME_DTYPE}, {"post_mix", "Tn"}, {"comb_mix", "Tnn"},
            {"hc_fn", "MK"}, {"hc_scale", "3"}, {"hc_base", "M"}},
        {{"residual_out", "Tnd", kSAME_DTYPE}, {"layer_input", "Td", kSAME_DTYPE}, {"next_post_mix", "Tn"},
            {"next_comb_mix", "Tnn"}},
        mhcPostPreWorkspaceSize},
        preParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
