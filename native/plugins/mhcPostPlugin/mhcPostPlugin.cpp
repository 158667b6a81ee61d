// MhcPost: out[t,j,c] = post_mix[t,j] * x[t,c] + sum_i comb_mix[t,i,j] * residual[t,i,c]
// (contract: shared/spec/mhc_ops.md). Kernel call, plugin and creator.
#include "mhcPluginCommon.h"

#include <exception>
#include <string>

namespace mhc
{
namespace plugin
{
namespace
{
char const* const kNAME = "MhcPost";

// MhcPost has no attributes; any field passed to it is an error.
std::vector<FieldSpec> const kFIELDS = {};

// Inputs: x [T,d], residual [T,n,d], post_mix [T,n], comb_mix [T,n,n]. Output: out [T,n,d].
constexpr int32_t kNB_IN = 4;
constexpr int32_t kNB_OUT = 1;

class MhcPostPlugin final : public MhcPlugin<MhcPostPlugin, kNB_IN, kNB_OUT, 1>
{
public:
    explicit MhcPostPlugin(Fields const& fields)
        : MhcPlugin(kNAME, fields)
    {
    }

    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (!isResidualType(inputTypes[0]) || inputTypes[1] != inputTypes[0])
        {
            logError(std::string(kNAME) + ": x and residual must share one of float32, float16, bfloat16, got "
                + dataTypeName(inputTypes[0]) + " and " + dataTypeName(inputTypes[1]));
            return -1;
        }
        outputTypes[0] = inputTypes[0];
        return 0;
    }

    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
        nvinfer1::DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, nvinfer1::DimsExprs* outputs,
        int32_t nbOutputs, nvinfer1::IExprBuilder& /*exprBuilder*/) noexcept override
    {
        if (!checkCounts(nbInputs, nbOutputs, kNB_IN, kNB_OUT))
        {
            return -1;
        }
        if (inputs[0].nbDims != 2 || inputs[1].nbDims != 3 || inputs[2].nbDims != 2 || inputs[3].nbDims != 3)
        {
            logError(std::string(kNAME) + ": expected x [T,d], residual [T,n,d], post_mix [T,n], comb_mix [T,n,n]");
            return -1;
        }
        nvinfer1::IDimensionExpr const* xd = inputs[0].d[1];
        nvinfer1::IDimensionExpr const* rd = inputs[1].d[2];
        if (xd->isConstant() && rd->isConstant() && xd->getConstantValue() != rd->getConstantValue())
        {
            logError(std::string(kNAME) + ": x has d=" + std::to_string(xd->getConstantValue()) + " but residual d="
                + std::to_string(rd->getConstantValue()));
            return -1;
        }
        outputs[0] = inputs[1];
        return 0;
    }

    bool supportsFormat(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut) const noexcept override
    {
        nvinfer1::PluginTensorDesc const& t = inOut[pos].desc;
        if (t.format != nvinfer1::TensorFormat::kLINEAR)
        {
            return false;
        }
        switch (pos)
        {
        case 0: return isResidualType(t.type);
        case 1:
        case 4: return t.type == inOut[0].desc.type; // residual and out follow x
        default: return t.type == nvinfer1::DataType::kFLOAT;
        }
    }

    int32_t launch(KernelCall const& c) noexcept override
    {
        mhcStatus_t const st = mhcPost(c.inputs[0], c.inputs[1], static_cast<float const*>(c.inputs[2]),
            static_cast<float const*>(c.inputs[3]), c.outputs[0], c.t, c.n, c.d, c.dtype, c.stream);
        return st == MHC_STATUS_SUCCESS ? 0 : reportKernelFailure(kNAME, "mhcPost", st);
    }

private:
    int32_t checkStatic(nvinfer1::PluginTensorDesc const& res) const noexcept override
    {
        return checkResidualShape(kNAME, res);
    }
};
} // namespace

nvinfer1::IPluginCreatorV3One* getMhcPostCreator() noexcept
{
    static MhcCreator<MhcPostPlugin> creator(kNAME, kFIELDS);
    return &creator;
}

} // namespace plugin
} // namespace mhc
