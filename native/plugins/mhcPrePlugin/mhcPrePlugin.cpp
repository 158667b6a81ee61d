// MhcPre: residual [T,n,d] -> layer_input [T,d], post_mix [T,n], comb_mix [T,n,n]
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
    return mhcPre(c.inputs[0], c.f32In(1), c.f32In(2), c.f32In(3), c.outputs[0], c.f32Out(1), c.f32Out(2), c.t, c.n,
        c.d, c.dtype, &p, c.workspace, c.workspaceSize, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPreCreator() noexcept
{
    static MhcCreator<mhcPreParams> creator({"MhcPre", "mhcPre", preFields(),
        {{"residual", "Tnd", kRESIDUAL_DTYPE}, {"hc_fn", "MK"}, {"hc_scale", "3"}, {"hc_base", "M"}},
        {{"layer_input", "Td", kSAME_DTYPE}, {"post_mix", "Tn"}, {"comb_mix", "Tnn"}}, mhcPreWorkspaceSize},
        preParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
