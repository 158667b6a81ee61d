// MhcPost: out[t,j,c] = post_mix[t,j] * x[t,c] + sum_i comb_mix[t,i,j] * residual[t,i,c]
// (contract: shared/spec/mhc_ops.md). Its table and kernel call; the plugin
// class and creator are common/mhcOpPlugin.h's. MhcPost has no attributes.
#include "mhcOpPlugin.h"

namespace mhc
{
namespace plugin
{
namespace
{
mhcStatus_t launch(NoParams const& /*p*/, KernelCall const& c)
{
    return mhcPost(c.inputs[0], c.inputs[1], c.f32In(2), c.f32In(3), c.outputs[0], c.t, c.n, c.d, c.dtype, c.stream);
}
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostCreator() noexcept
{
    static MhcCreator<NoParams> creator({"MhcPost", "mhcPost", noFields(),
        {{"x", "Td", kRESIDUAL_DTYPE}, {"residual", "Tnd", kSAME_DTYPE}, {"post_mix", "Tn"}, {"comb_mix", "Tnn"}},
        {{"out", "Tnd", kSAME_DTYPE}}},
        noParams, launch);
    return &creator;
}

} // namespace plugin
} // namespace mhc
