// MhcCollapse (V4.1): layer_input[t,c] = sum_i pre_mix[t,i] * residual[t,i,c]
// (contract: shared/spec/mhc_ops.md, "MhcCollapse"). Its table and kernel call;
// the plugin class and creator are common/mhcOpPlugin.h's. No attributes.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(NoParams const& /*p*/, KernelCall const& c)
{
    return mhcCollapse(c.inputs[0], c.f32In(1), c.outputs[0], c.t, c.n, c.d, c.dtype, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcCollapseCreator() noexcept
{
    static MhcCreator<NoParams> creator({"MhcCollapse", "mhcCollapse", noFields(),
        {{"residual", "Tnd", kRESIDUAL_DTYPE}, {"pre_mix", "Tn"}}, {{"layer_input", "Td", kSAME_DTYPE}}},
        noParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
